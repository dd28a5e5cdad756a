from patrd.model.revision_changes import spec_changes

BASE = {
    "tag": "v1",
    "env": {"A": "1", "B": {"secret": "k"}},
    "ports": {"80": "http"},
    "scale": {"min": 1, "max": 1},
    "config_mounts": {},
}


def test_first_revision_has_no_changes() -> None:
    assert spec_changes(None, BASE) == []


def test_names_added_removed_changed_without_values() -> None:
    after = {
        **BASE,
        "env": {"A": "2", "C": "secret-looking"},
        "ports": {"80": "http", "8080": "http"},
    }
    changes = spec_changes(BASE, after)
    assert changes == ["env C added", "env B removed", "env A changed", "port 8080 added"]
    assert not any("secret-looking" in c for c in changes)


def test_scalars_and_groups() -> None:
    after = {**BASE, "tag": "v2", "scale": {"min": 2, "max": 2}}
    assert spec_changes(BASE, after) == ["tag v1 → v2", "scale changed"]


def test_nothing_changed() -> None:
    assert spec_changes(BASE, dict(BASE)) == []

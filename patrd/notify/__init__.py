"""Notifications: patrd's events, filtered per target, delivered off the hot path.

* ``rules.py``: pure — event → notification kind (one ordered table), filter
  matching, redaction, the payload a receiver gets.
* ``targets.py``: pure — a target (``[[notify]]`` or ``POST /v1/notifications``)
  parsed and checked, errors naming the field.
* ``senders.py``: the I/O — JSON webhook (HMAC-SHA256 signed), Slack-compatible
  incoming webhook, email over SMTP.
* ``dispatcher.py``: tails the event tables, queues deliveries (bounded, drops
  the oldest), sends them with bounded retries and backoff.
"""

"""TLS for the proxy: certificates (ACME or the local CA), their store and renewal.

See ``README.md`` in this package for the vocabulary.
"""

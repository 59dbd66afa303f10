"""Backup sets: `backup`, `backup list`, `backup verify`, `restore`, retention (docs/backups.md).

A set is `<backup.dir>/<UTC timestamp>-<id>/` with one PostgreSQL dump per database, the Redis
RDB plus a key export for an online restore, the config file, and `manifest.json` written last.
No click and no rich in here: the CLI parses, calls and renders.
"""

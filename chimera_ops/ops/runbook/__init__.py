"""Executable runbooks: parsing (parse.py), variables (variables.py), running (runner.py)."""

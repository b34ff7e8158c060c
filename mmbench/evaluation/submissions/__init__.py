"""Submissions, parsed and checked before anything runs; nothing here runs submitted code."""

"""The leaderboard and the reports: entries and their rankings (`entries`), baseline runs as
entries (`publish`), published reference rows (`published`), the static board (`site`) and the
`mmbench report` pages (`report`). May import every stage below it; the CLI sits above.
"""

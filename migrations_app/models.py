# Migration records arrive with the live-migration issue.

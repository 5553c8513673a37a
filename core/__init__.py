"""What every app uses and none owns: row rendering, filters, form helpers, threads."""

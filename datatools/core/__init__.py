"""The base every other package stands on; it imports nothing of datatools above it.

errors (UserError kinds, exit codes), fsio (every write-then-rename, disk-full, regular files
only), records (file stamps, completion records, the append-only JSONL log), console (progress
and plain lines), task_errors (tasks that raised), runlog (a run's log), interruption
(Ctrl-C/SIGTERM)."""

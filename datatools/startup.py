"""What the console command knows about its own process; cli.main sets it before a command runs.

Kept apart from parallel.py so that setting it does not import Dask for every command.
"""

# The process was started as the `datatools` command, and a command runs no native thread pool
# before its first cluster: parallel.py may fork its local workers (LOCAL_START there).
console_process = False

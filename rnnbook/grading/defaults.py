"""Every default and cap of the grader, declared once (the command line, the sandbox and
the reports read them from here)."""

# Per notebook (command-line defaults)
TIMEOUT_S = 60.0             # wall-clock seconds per notebook (--timeout)
MEMORY_MB = 1024             # address space beyond the pre-imported libraries (--memory-mb)
DISK_MB = 64                 # its working folder: a tmpfs of this size; also the largest file
FILES = 4096                 # files and folders in that tmpfs (nr_inodes): kernel memory is bounded
THREADS = 64                 # processes and threads of one notebook (RLIMIT_NPROC)
OPEN_FILES = 256             # file descriptors of one notebook (RLIMIT_NOFILE)
CPU_SLACK_S = 5              # RLIMIT_CPU: twice --timeout (two busy threads), plus this

# What the coordinator reads from a student (caps keep its memory bounded)
MAX_NOTEBOOK_BYTES = 20 << 20
MAX_CELLS = 5000             # a notebook with more cells is `invalid`
MAX_STREAM_BYTES = 64 << 20  # bytes one notebook may send back in all
MAX_READ_PER_TURN = 1 << 20  # bytes read from one notebook before the others get a turn
OUTPUT_CAP = 1 << 20         # bytes of a notebook's printed output counted as printed; the rest dropped
OUTPUT_TAIL = 2000           # bytes of that output kept (in memory), shown in the feedback when it crashed
MAX_CELL_ERRORS = 30         # cell errors kept per notebook
MAX_ANSWERS = 50             # written answers kept per notebook
MAX_ANSWER_CHARS = 20000     # characters kept of each written answer
MAX_REVIEW = 40              # lines flagged for review kept per notebook (rnnbook.grading.scan)

# Wire format (rnnbook.grading.wire)
MAX_FRAME = 32 << 20         # bytes in one frame
MAX_VALUE_BYTES = 16 << 20   # array bytes in one check's return value
MAX_DEPTH = 8                # nesting of tuples/lists/dicts in a return value
MAX_ITEMS = 256              # items in one tuple/list/dict
MAX_TEXT = 4000              # characters of one message string

# The sandbox
SANDBOX_UID = 65534          # the host user the sandbox runs as when the grader is root
JOB_UID = 1000               # a notebook's user id inside its own user namespace
JOB_UIDS = (0x78000000, 1 << 24)   # without namespaces, as root: each notebook gets its own
                             # host user id, drawn from [start, start + count), not in passwd
JOB_DIR = "/sandbox/work"    # a notebook's working folder inside its namespaces
LIB_DIR = "/sandbox/lib"     # the students' copy of the rnnbook library inside the sandbox
GRADER_DIR = "/sandbox/grader"   # the sandbox's side of the grader (not importable by notebooks)
MPL_DIR = "/sandbox/mpl"     # matplotlib's cache of the fork server
START_TIMEOUT_S = 300.0      # the fork server's start (imports torch)
KILL_GRACE_S = 30.0          # wait for a killed notebook's exit before moving on

# Results
RESULT_VERSION = 3           # a result of another version is regraded
STUDENTS_DIR = "students"    # OUT/students/<student>/: each student's results and reports
MAX_NAME_BYTES = 120         # longer (escaped) student names are cut and given a short hash
STATUSES = ("graded", "timeout", "memory", "error", "invalid", "missing")
SKIP_TAGS = ("self-check", "skip-grading")

import sys

from llmtrace._cli import main

sys.exit(main())

import sys

from llmtrace.cli.main import main

sys.exit(main())

import sys

from updown_app.cli import main

sys.exit(main())

import sys

from igkd.cli import main

sys.exit(main())

import sys

from kedr_build.cli import main

sys.exit(main())

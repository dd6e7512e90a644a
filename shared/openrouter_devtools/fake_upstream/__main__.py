"""``python -m openrouter_devtools.fake_upstream``."""

from .cli import main

raise SystemExit(main())

from dyno.cli import main

raise SystemExit(main())

from gtgm.cli import main

raise SystemExit(main())

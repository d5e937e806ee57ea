from bench.peer.run import main

raise SystemExit(main())

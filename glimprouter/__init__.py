"""The `glimp` console entry point: one command, each role's subcommands imported lazily."""

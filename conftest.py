pytest_plugins = ["postroom_testing.plugin"]

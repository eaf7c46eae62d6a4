pytest_plugins = ["underlay.testing"]

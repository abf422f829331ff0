"""hubindex's built-in plugins, installed as `hubindex_plugins`. They use the same hooks as any other plugin."""

"""The plugin host: loading plugins (`manager`), the stage implementations they register (`registry`), the
core's own fallbacks (`builtin`), and what ``slmdeploy plugins`` lists (`inventory`)."""

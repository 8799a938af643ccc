"""Planning a build: from the project file and the installed plugins to the steps of each variant, each with
the content address (key) of its output. Planning runs nothing."""

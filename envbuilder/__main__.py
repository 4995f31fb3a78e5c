from envbuilder.cli import entry

entry()

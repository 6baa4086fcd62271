from gtgm.cli import entry

entry()

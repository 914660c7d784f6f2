# Hearth Python runtime entry point: /usr/bin/python3 -S -B /hearth/server.py
#
# Kept tiny on purpose: the main script is compiled on every start, while
# hearthrt is imported and can come from its precompiled __pycache__.
import hearthrt

hearthrt.main()

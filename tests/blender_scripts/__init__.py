"""Scripts that tests run under Blender (the ``bpy`` module) in a child process, via tests/blender_env.py."""

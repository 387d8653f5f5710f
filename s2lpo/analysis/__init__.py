"""Analysis: the cached tidy frame of logged runs -> YAML specs -> tables and figures. Reads runs only through
``s2lpo.tracking.readers``; imports nothing else of ours."""

"""`hubindex serve`: a read-only web explorer of an index, with a JSON form of every page.

app.py assembles the application and its safety defaults, reader.py shares read-only catalog
access between requests, render.py renders a page as HTML or JSON, params.py checks parameters;
the pages_*.py modules hold the routes.
"""

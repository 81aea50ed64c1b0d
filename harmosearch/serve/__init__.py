"""`harmosearch serve`: a warm search server, its page, and the client the CLI uses to reach it.

    app     the JSON API and the page (FastAPI), a thin layer over `harmosearch.search.Index`
    server  uvicorn serving the app, and the discovery file announcing it in each index folder
    client  standard library only: find a running server for an index and search through it

Importing this package imports none of them: `client` must stay cheap to import.
"""

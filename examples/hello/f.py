# OpenLambda-style handler: f(event) -> JSON-serialisable result.
def f(event):
    name = (event or {}).get("name", "world")
    return {"greeting": f"hello, {name}"}

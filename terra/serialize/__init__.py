"""Values ↔ objects: type-aware codecs and canonical hashing.

(Contract; implementation in progress.)

    store_value(store, value) -> ObjectId   encode, store every object, return the value's id
    hash_value(value) -> ObjectId           the id store_value would return, storing nothing
    load_value(store, oid) -> value         decode (a fresh, independent value each call)
    summarize(store, oid) -> dict           {"type": ..., "shape"/"dtype"/"len"..., "nbytes": ...}
    register_codec(type, encode, decode, name=...)

Any object with a ``__terra_ref__`` attribute (an ObjectId) — e.g. an
``terra.io.Artifact`` — is encoded as a reference to that id without
re-hashing or re-storing its value.
"""

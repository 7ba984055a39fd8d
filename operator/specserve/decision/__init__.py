"""The decision core: goodput model, evidence, the health policy, and the judgment of one serving against a reading.

Pure: plain data in and out, no I/O. Imports api, engine, catalog and rendering's data types; never observation or cluster.
"""

"""The bottom layer: records, hashing, time, files, hooks and the progress interface.

Everything above imports from here; nothing here imports anything else of mlops_nb but ``exceptions``.
"""

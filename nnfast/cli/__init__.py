"""The command-line programs: ``python -m nnfast`` (``demo``) and ``python -m nnfast bench``
(``bench``, with its workloads and peers)."""

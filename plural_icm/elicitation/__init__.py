"""People in the loop: a web study in which members of a group answer the questions ICM is least
sure of about that group, and the export of their answers to ``stage=collaborative``.

``study`` builds a study from finished searches (the questions the collaborative stage would ask),
``store`` keeps it (SQLite, WAL), ``server`` serves the annotator's form and the researcher's view,
``agreement`` and ``export`` summarise the answers and write the answers file. Command line:
``python -m plural_icm.elicitation --help``. Needs the ``elicitation`` extra (Flask, waitress).
"""

"""`w5xde local`: the same workers as local processes, their live view, summary and plot.

Above the worker (it starts `w5xde worker` processes and reads their report lines) and
beside the operator: it folds the same reports with the same `contract.figures`.
"""

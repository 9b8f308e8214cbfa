"""Many models of one architecture trained as one computation (issue 24).

:mod:`mdesc.ensemble.recurrent`: the recurrent layers of E models at once (forward and
backpropagation through time), the one place the ensemble's cell math is called from Python.
"""

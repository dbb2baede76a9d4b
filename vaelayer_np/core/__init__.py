"""The teaching core: the maths of the VAE layer and the two training methods, in plain NumPy.

Read in this order (:data:`vaelayer_np.MODULE_MAP` holds it, with one line per module):
:mod:`.minimal` (everything in one file), :mod:`.settings`, :mod:`.activations`, :mod:`.ops`,
:mod:`.losses`, :mod:`.layers`, :mod:`.network`, :mod:`.optim`, :mod:`.iffcl`,
:mod:`.backprop`, :mod:`.gradcheck`.

Every layer has one forward and one backward, written as plainly as the maths; nothing
here imports the fast path (:mod:`vaelayer_np.fast`), the run machinery or the tools
(``tests/test_layout.py`` enforces it).
"""

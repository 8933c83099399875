"""Training of denoising autoencoders: phantoms, noise models, data, loops, export.

Pure Python: no Django. ``python -m training --help`` lists the commands.
"""

"""What a tenant file is and whether it is acceptable: loader, model, policy, validation.

The lowest layer: it imports nothing from the other cdnctl packages.
"""

"""The authors' computations restated with torch and FrEIA (the test extra).

Tests and benchmarks compare bgad_jax with these; neither imports the other's
helpers. Not part of the installed package.
"""

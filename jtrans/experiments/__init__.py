"""Paper reproductions: each `experiments/<paper>/` holds a recipe, its README and the numbers a
finished run must reach (`expected.json`); `jtrans.experiments.check` compares the two."""

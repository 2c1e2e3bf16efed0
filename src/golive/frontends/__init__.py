"""One module per source framework; ``base`` holds the protocol and the registry (``get_frontend``), ``_structure``
nests inputs and outputs named by path. Each framework module imports its framework lazily."""

"""lib.tinygpt."""

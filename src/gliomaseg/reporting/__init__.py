"""The HTML report of committed results and run folders."""

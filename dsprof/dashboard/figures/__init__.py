"""Pure figure builders: tables and analyzer results in, plotly figures out."""

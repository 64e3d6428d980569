"""From the catalog to a replacement module: catalog, generator, the file-to-file
pipeline steps SCons runs, load scripts."""

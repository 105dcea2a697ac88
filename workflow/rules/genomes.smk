# Rules of the genomes stage (thin: inputs, outputs, resources, one CLI call).

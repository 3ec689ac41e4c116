"""JRRELP: relation extraction trained jointly with ConvE link prediction over a type-level KG."""

"""Hospital PACS connection over DICOMweb: query and retrieve studies into the research
database through the import checks, and write results back as DICOM Structured Reports."""

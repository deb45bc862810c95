"""The Med-VQA dataset tool: clinical cases (images + reports) -> concepts -> reviewed QA pairs -> a trainable dataset.

    project = Project.create("runs/vqa-data/my-cases")          # project.py: one folder holds a build
    ingest_into(project, "cases.zip")                            # ingest.py: images (PNG/JPEG/DICOM) + report text
    extract_into(project)                                        # concepts.py: lexicon + spaCy rules + negspacy
    generate_into(project)                                       # qagen.py: QA pairs of 8+ question types
    export_project(project, "runs/vqa-data/my-cases/export")     # export.py: VQA-RAD JSON layout + dataset card

Review (review.py) sits between extraction and generation and between generation and export; every decision is
persisted in the project, so a review can stop and continue. ``iuxray.py`` measures concept extraction against IU
X-ray's MeSH labels. The web pages (issue 17) call the same functions. This package never imports the text domain.
"""

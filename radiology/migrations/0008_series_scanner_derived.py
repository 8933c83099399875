"""Series.scanner_derived: DERIVED images from elsewhere may be denoised; only this
app's own outputs stay ``derived`` (never denoised again). Existing derived series
are re-read (one stored instance each, without pixels) to tell which they are."""

from django.db import migrations, models


def split_derived(apps, schema_editor):
    import pydicom

    from dicomio.reader import is_own_output
    from radiology.storage import media_path

    Series = apps.get_model("radiology", "Series")
    Instance = apps.get_model("radiology", "Instance")
    for series in Series.objects.filter(derived=True):
        first = Instance.objects.filter(series=series).order_by("slice_index").first()
        if first is None:
            continue
        try:
            ds = pydicom.dcmread(media_path(first.file), stop_before_pixels=True)
        except (OSError, ValueError, pydicom.errors.InvalidDicomError):
            continue  # unreadable: stays refused, as before
        if not is_own_output(ds):
            series.derived, series.scanner_derived = False, True
            series.save(update_fields=["derived", "scanner_derived"])


class Migration(migrations.Migration):
    dependencies = [
        ("radiology", "0007_series_windows"),
    ]

    operations = [
        migrations.AddField(
            model_name="series",
            name="scanner_derived",
            field=models.BooleanField(
                default=False,
                help_text="ImageType DERIVED from elsewhere (a scanner's MPR, another "
                "tool): may be denoised, and the pages say it is processed already",
            ),
        ),
        migrations.AlterField(
            model_name="series",
            name="derived",
            field=models.BooleanField(
                default=False,
                help_text="this app's own denoised or residual output: never "
                "denoised again",
            ),
        ),
        migrations.RunPython(split_derived, migrations.RunPython.noop),
    ]

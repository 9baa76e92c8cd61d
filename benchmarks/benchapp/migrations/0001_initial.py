from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Probe",
            fields=[
                ("sample", models.IntegerField(primary_key=True, serialize=False)),
                ("started_ns", models.BigIntegerField()),
            ],
        ),
    ]

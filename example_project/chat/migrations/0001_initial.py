import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies: list[tuple[str, str]] = []

    operations = [
        migrations.CreateModel(
            name="Room",
            fields=[
                ("id", models.BigAutoField(
                    auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("name", models.SlugField(unique=True)),
                ("created", models.DateTimeField(auto_now_add=True)),
            ],
            options={"ordering": ["name"]},
        ),
        migrations.CreateModel(
            name="Message",
            fields=[
                ("id", models.BigAutoField(
                    auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("user", models.CharField(max_length=50)),
                ("content", models.TextField(max_length=2000)),
                ("timestamp", models.DateTimeField(auto_now_add=True, db_index=True)),
                ("worker", models.CharField(blank=True, default="", max_length=100)),
                ("via", models.CharField(blank=True, default="", max_length=16)),
                ("room", models.ForeignKey(
                    on_delete=django.db.models.deletion.CASCADE, related_name="messages",
                    to="chat.room")),
            ],
            options={
                "ordering": ["timestamp", "id"],
                "indexes": [
                    models.Index(fields=["room", "-id"], name="chat_message_room_recent"),
                ],
            },
        ),
    ]
